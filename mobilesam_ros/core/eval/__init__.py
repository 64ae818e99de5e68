"""Measuring models and writing labels (ROS-free): mask IoU and bootstrap intervals (metrics),
COCO ground truth, RLE and AR/AP through pycocotools (coco), prompts sampled from masks
(prompts), student-vs-teacher SegAny agreement (segany) and resumable COCO label files (labels).
Sits above engine/: it runs predictors, never the other way round."""
