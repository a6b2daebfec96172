"""Reading medical images: DICOM, NIfTI, label maps and whole-slide images."""
