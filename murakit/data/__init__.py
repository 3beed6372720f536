"""Data: the MURA index, splits, the prepared cache, synthetic data and DICOM writing/indexing."""
