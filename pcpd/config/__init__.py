"""Config files: the settings they describe, how they are loaded and checked."""
