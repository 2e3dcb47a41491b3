"""Feeding cases into training: datasets, MONAI transforms, the case cache, the nnU-Net export,
AutoPET preparation and TotalSegmentator label mapping."""
