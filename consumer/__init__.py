"""chatapp-consumer: Kafka send requests batched into Alibaba Cloud CAMS SendChatappMassMessage calls."""

__version__ = "0.1.0"
