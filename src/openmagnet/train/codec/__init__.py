"""Training EnCodec codecs (SPEC §6): the trainable quantizer, the reconstruction and adversarial
losses, the trainer and its run folder, the codec metrics and the `openmagnet codec` command.
The inference codec lives in `openmagnet.codec` and never imports this package."""
