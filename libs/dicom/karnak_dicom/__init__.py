"""Karnak's DICOM library: conditions, de-identification, Part 10 reading and writing, pixel data, transcoding.

It knows nothing of RabbitMQ, blob stores or services (the gateway's `karnak_shared` builds on it, not the
other way round), as pydicom knows nothing of networks.
"""
