"""meshagent: Meshplane's data-plane agent.

It joins the mesh (its own key, a CSR, a join token), keeps the certificate renewed, holds
the one authenticated ADS stream to the control plane, relays it to a local Envoy over a
Unix socket (adding the workload certificate as SDS, so the key never leaves the host),
caches the last configuration Envoy accepted on disk, and supervises Envoy.

No Django here (tests/proxy_agent/test_purity.py enforces it): the agent runs beside
workloads with grpcio and the xDS protos only; `cryptography` is loaded only by the
short-lived child that makes keys and CSRs (keygen.py). Resident memory: about 49 MB with
Envoy serving (bench/agent_memory.py), most of it the interpreter, asyncio/ssl and grpcio.
"""
