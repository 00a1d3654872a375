"""The xDS management server (see docs/xds.md)."""
