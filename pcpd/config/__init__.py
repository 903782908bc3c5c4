"""Config files: the settings they describe, how they are loaded and checked.

One concept per module, each importing only the ones above it:

* ``kinds``: the rule one key's value follows (``Integer``, ``Choice``, ``Table``, ...)
  and the ``setting()`` declaration that ties a key to its kind, default and doc;
* ``settings``: the settings dataclasses, ``DEFAULT_SETTINGS`` (the soak mix);
* ``rules``: the checks between keys, and which worker CPU runs which workload;
* ``load``: TOML files and dicts in, dicts and hashes out, sweeps, ``pcpd check``;
* ``schema``: the JSON Schema the kinds describe, ``pcpd config-schema``.

Import from those modules (``from pcpd.config.load import load_settings``).
"""
