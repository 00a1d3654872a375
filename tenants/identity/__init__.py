"""Mesh identity: per-tenant trust domains, per-mesh CAs, join tokens and certificate
issuance for proxies (SPIFFE X.509 SVIDs), and the control plane's own TLS identity.

It lives in `tenants` because identity is per tenant: the trust domain carries the
tenant's account id, and the xDS server learns who is on a stream from it.
"""
