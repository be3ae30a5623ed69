"""Small classic data tables embedded in the package, so nothing downloads at run time."""
