"""Provider profiles: schema, loading, validation, binding table and matching."""
