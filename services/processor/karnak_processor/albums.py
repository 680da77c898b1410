"""Which Kheops albums of a STOW destination an instance is shared into (DESIGN.md section 9).

The processor decides it, because only it sees the instance as received: album conditions are evaluated on
the original attributes, before any de-identification. The indexes travel in the send message's envelope
(`Envelope.kheops_albums`) to the stow-sender, which asks the kheops-sharer to share the series once the
transfer succeeded.
"""

from __future__ import annotations

from pydicom import Dataset

from karnak_shared.config import DicomDestination, StowDestination


def matching_albums(destination: StowDestination | DicomDestination, dataset: Dataset) -> list[int]:
    """Indexes (in `destination.kheops_albums`) of the albums whose condition holds for `dataset`.

    An album without a condition matches every instance; a DICOM destination has no albums.
    """
    if not isinstance(destination, StowDestination):
        return []
    return [
        index
        for index, album in enumerate(destination.kheops_albums)
        # Compiled with the configuration: nothing is parsed per instance.
        if album.condition.always_true or album.condition.evaluate(dataset)
    ]
