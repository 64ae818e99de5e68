"""Decoupled distillation (MobileSAM): train a small image encoder on a teacher's embeddings."""
