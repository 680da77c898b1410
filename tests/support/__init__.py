"""Real servers and data for the tests: RabbitMQ, DCMTK peers, the gateway as processes, DICOM studies."""
