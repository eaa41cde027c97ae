"""Provider profiles: schema, loading, validation, binding table and matching.

Modules (imported directly; this package re-exports nothing so importing ``model``
stays cheap):

* ``model``        frozen records (Profile, Credential, Endpoint, Binding, GrantSpec)
* ``loader``       ``load_profiles(paths) -> ProfileSet`` / ``fingerprint_files(paths)``
* ``diagnostics``  ``Diagnostic``, ``ProfileError``
* ``schema``       raw YAML → typed objects (types, unknown keys, defaults)
* ``validation``   the load-time rules (ARCHITECTURE.md 4), ambiguity and overlap checks
* ``bindings``     profile → bindings (audience overrides applied)
* ``patterns``     host/path globs: parse, compile, specificity, overlap
* ``hosts``        host normalization, loopback / Kubernetes-service classification
* ``matcher``      ``PolicyTable`` (per-request lookup)
* ``profileset``   ``ProfileSet``
* ``report``       body of the ``validate`` command
"""
