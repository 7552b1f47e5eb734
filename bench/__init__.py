"""``python -m bench``: the service's performance figures, measured in one run on this machine.

The mock Kafka broker (``consumer.mockcluster``) and the local CAMS endpoint
(``consumer.local_cams``) run in processes of their own, the service in its own process(es)
(``python -m consumer run``), and this process only produces, reads and measures.
See bench/README.md for what each figure means.
"""
