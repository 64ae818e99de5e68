"""The class-name table: numbers are ids, names go through the table, unknown names keep the name."""
import pytest

from mobilesam_ros.core.engine.class_names import ClassNames, load_class_names


def test_resolve_numbers_names_and_unknown():
    names = ClassNames({0: "person", 2: "car", 5: "bus"})
    assert names.resolve("0") == (0, "person")
    assert names.resolve(" 5 ") == (5, "bus")
    assert names.resolve("7") == (7, "")               # an id the table has no name for
    assert names.resolve("car") == (2, "car")
    assert names.resolve("robot") == (-1, "robot")     # kept, with class_id -1
    assert names.resolve("") == (-1, "")
    assert names.resolve("-3") == (-1, "-3")           # not an id InstanceMask.class_id can hold
    assert names.resolve("99999999999") == (-1, "99999999999")
    assert names.name(-1) == "" and names.name(2) == "car"


def test_filter_ids():
    names = ClassNames({0: "person", 5: "bus"})
    assert names.ids_of(["person", "5", "robot"]) == (frozenset({0, 5}), ["robot"])


def test_class_name_file(tmp_path):
    f = tmp_path / "names.txt"
    f.write_text("person\n\ncar\n")
    assert load_class_names(str(f)) == {0: "person", 2: "car"}
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="names no class"):
        load_class_names(str(tmp_path / "empty.txt"))


def test_detector_metadata_names_reach_the_model():
    """YOLOv8n's ONNX metadata (Ultralytics `names`) is the table when no file is given."""
    from conftest import DATA

    from mobilesam_ros.core.engine.detector import YoloV8OnnxDetector
    from mobilesam_ros.core.engine.model import SegmentationModel

    model = SegmentationModel(backend=None, detector=YoloV8OnnxDetector(str(DATA / "models" / "yolov8n_int8.onnx")))
    assert model.class_names.resolve("person") == (0, "person")
    assert model.class_names.name(5) == "bus" and len(model.class_names) == 80
