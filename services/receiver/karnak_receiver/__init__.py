"""The receiver: the gateway's DICOM listener (C-ECHO, C-STORE) that puts instances on RabbitMQ."""
