"""Files and bytes: checkpoints (weights_only), weight downloads, image codecs both ways, atomic writes."""
