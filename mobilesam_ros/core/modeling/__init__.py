"""MobileSAM networks, written here with the official parameter names so official checkpoints load
strictly: TinyViT-5M image encoder + SAM neck, SAM prompt encoder, SAM two-way mask decoder."""
