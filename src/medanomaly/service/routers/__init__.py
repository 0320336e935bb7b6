"""API and page routers of the workstation."""
