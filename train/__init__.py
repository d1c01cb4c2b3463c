"""midm trainer: PyTorch modules with the MIDMs reference key names, data, training, export."""
