"""The dicom-sender: delivers queued instances to DICOM destinations by C-STORE."""
