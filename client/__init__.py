"""The public Python client: Producer, Consumer, AdminClient (the codec and wire schema live in the leaf package `wire`)."""

from client.admin import (
    AdminClient,
    BrokerInfo,
    ClusterDescription,
    PartitionDescription,
    TopicDescription,
    TopicInfo,
)
from client.config import AdminConfig, ConsumerConfig, ProducerConfig
from client.consumer import Consumer, ConsumerRecord
from client.errors import ReplogError, for_code
from client.producer import Producer, RecordMetadata

__all__ = [
    "AdminClient",
    "AdminConfig",
    "BrokerInfo",
    "ClusterDescription",
    "Consumer",
    "ConsumerConfig",
    "ConsumerRecord",
    "PartitionDescription",
    "Producer",
    "ProducerConfig",
    "RecordMetadata",
    "ReplogError",
    "TopicDescription",
    "TopicInfo",
    "for_code",
]
