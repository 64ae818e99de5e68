"""numpy -> sensor_msgs/Image for the node's outputs; decoding lives in core.io.image_codec."""
from __future__ import annotations

import numpy as np


def array_to_image_msg(arr: np.ndarray, encoding: str, header):
    """(H, W[, C]) array -> sensor_msgs/Image with the given encoding and header (copied)."""
    from sensor_msgs.msg import Image

    arr = np.ascontiguousarray(arr)
    msg = Image(header=header, encoding=encoding, is_bigendian=0)
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.step = int(arr.strides[0])
    msg.data = arr.tobytes()
    return msg
