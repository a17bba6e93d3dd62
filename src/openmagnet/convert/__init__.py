"""`openmagnet convert`: a model from one layout to another, strictly and with its weights bit for bit.

Layouts: `audiocraft` (state_dict.bin + compression_state_dict.bin, what audiocraft 1.3.0 loads), `openmagnet`
(MAGNeT.save_pretrained's config.json + safetensors) and `transformers` (openmagnet.transformers: what transformers'
Auto classes and the text-to-audio pipeline load). command.py is the parser (argparse only); layouts.py does the work.
"""
