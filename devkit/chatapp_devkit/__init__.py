"""chatapp-devkit: everything to run chatapp-consumer on one machine with nothing real behind it.

The embedded Kafka broker (``mockcluster``, librdkafka's mock cluster), the local CAMS endpoint
(``local_cams``), the Schema Registry stand-in (``registry_standin``), sample traffic
(``samples``) and the demo (``demo``); ``chatapp-devkit`` (``cli``) is their command.

The service (the ``consumer`` package) never imports this package: tests/unit/test_import_contracts.py
checks that in CI. This package imports the service freely.
"""
