"""The processor: decides per destination what leaves, transforms it and queues it for its sender."""
