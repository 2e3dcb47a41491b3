"""The networks and how they are trained: diffusion objectives and samplers, U-Nets, the channel
encoding, stage configs and checkpoints, preprocessing and the training loop."""
