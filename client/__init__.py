"""The public Python client: Producer, Consumer, AdminClient, the RecordBatch codec and the wire schema."""
