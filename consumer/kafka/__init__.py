"""The Kafka port: the only part of the service that imports confluent_kafka.

``records`` holds the service's own types (no client); ``client`` the consumer and producer the
pipeline uses; ``tools`` what the operators' commands need; ``options`` and ``registry`` the
configuration check and the Schema Registry client.
"""

from .client import CLOSE_TIMEOUT_S, DEFAULT_MESSAGE_MAX_BYTES, KafkaIO, consumer_config, produce_waiting, producer_config, too_large, transactional_id
from .port import KafkaPort
from .records import TP, DeliveredRecord, DeliveryCallback, Fenced, Headers, ReceivedHeaders, Record

__all__ = [
    "CLOSE_TIMEOUT_S",
    "DEFAULT_MESSAGE_MAX_BYTES",
    "KafkaIO",
    "KafkaPort",
    "consumer_config",
    "produce_waiting",
    "producer_config",
    "too_large",
    "transactional_id",
    "Fenced",
    "TP",
    "DeliveredRecord",
    "DeliveryCallback",
    "Headers",
    "ReceivedHeaders",
    "Record",
]
