"""Real servers that tests talk to: a Triton Inference Server (PyTriton) and a TF Serving conformance peer.

`start_triton_peer` and `start_tfserving_peer` are plain context managers, usable outside pytest (e.g.
by a benchmark); `tests.peers.fixtures` shares one of each per pytest session.
"""
