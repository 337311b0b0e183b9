"""Root-only tests in network namespaces (a package, so the conftest names stay apart)."""
