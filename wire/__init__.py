"""The leaf shared by client, partition and server: the Kafka RecordBatch v2 codec (``wire.batch``)
and the generated protobuf schema (``wire.replog_pb2``).

Importing this package, ``wire.batch`` or ``wire.replog_pb2`` never imports grpc or asyncio, so the
state machines (partition/, metadata/) can use the codec without the network stack. The gRPC stubs
(``wire.replog_pb2_grpc``) import grpc and are imported only by client/ and server/.
"""
