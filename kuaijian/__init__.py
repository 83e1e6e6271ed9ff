"""The `kuaijian` command line and the whole-system jobs (demo, fleet load simulator).

Does: argument parsing and dispatch to the packages' CLI modules; `kuaijian demo` and `kuaijian fleet`.
Does not: hold any domain logic — drivers, interpretation, gateway and cloud live in their own packages.
"""
