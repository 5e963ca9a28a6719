"""Built-in offline scenarios; every module here is imported by the registry, so a new scenario is one file."""
