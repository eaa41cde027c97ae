"""OpenShell sandbox policy files (``run --policy``, ARCHITECTURE.md 10): ``version: 1`` YAML.

* ``model``   the typed policy (static part: filesystem, Landlock, process identity;
              dynamic part: network policy entries)
* ``schema``  raw YAML -> model, every problem reported in one pass (profile diagnostics)
* ``loader``  reading a policy file, telling policy files from profile files, and merging
              the network entries with the provider profiles into one profile set
* ``identity`` ``process.run_as_user/run_as_group`` -> uid, gid
"""
