"""ROS-free core; never imports rclpy or ROS messages. Layers, in the order a frame meets them:

    io/          files and bytes in and out: checkpoints, weights, image codecs, atomic writes
    modeling/    the networks (nn.Modules only): TinyViT encoder, prompt encoder, mask decoder
    runtime/     running them: torch / ONNX Runtime backends, export, the fast decoder, CPU policy
    eval/        measuring and labelling on top of the engine: mask IoU, bootstrap, COCO AR/AP, labels
    engine/      the engine: shared model, camera streams, embedding cache, predictor, SegAny, SegEvery, grid, detector, tracking, follow
    ops/         array operations: transforms, mask post-processing, overlays, 3D geometry
    structures/  the data passed between layers: prompts, detections, instances
"""
