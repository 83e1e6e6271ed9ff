"""HTTP API of the cloud service: dependencies (`deps`) and one router module per area (`routes`).

Does not: business logic — routes call cloud.grid / cloud.cases / cloud.queries and translate
CloudError subclasses to HTTP errors.
"""
