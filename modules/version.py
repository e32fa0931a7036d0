"""Easel's version, as written into infotext (`Version: easel-x.y.z`).

The value deliberately does not parse as an A1111 version number, so A1111's compatibility rules
for old infotexts (keyed on its own version) never fire when an Easel image is pasted into it.
"""

__version__ = "0.1.0"
VERSION = f"easel-{__version__}"
