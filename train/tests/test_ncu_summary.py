"""scripts/ncu_summary.py: Nsight Compute CSVs summed per kernel, in both of ncu's layouts."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ncu_summary.py"
spec = importlib.util.spec_from_file_location("ncu_summary", SCRIPT)
ncu_summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ncu_summary)

HEAD = '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC"'
ROW = '"{id}","1","midm","h","{name}","1","7","(256, 1, 1)","(8, 1, 1)","0","9.0"'


def write(tmp_path, lines):
    p = tmp_path / "ncu.csv"
    p.write_text("\n".join(lines) + "\n")
    return ncu_summary.summarise(ncu_summary.read_rows(p))


def test_raw_page_with_units_row_and_prof_lines(tmp_path):
    per = write(tmp_path, [
        "==PROF== Connected to process 1 (midm)",
        HEAD + ',"dram__bytes_read.sum","gpu__time_duration.sum"',
        '"","","","","","","","","","","","byte","usecond"',
        ROW.format(id=0, name="ucopy_f32") + ',"1,024","2.5"',
        ROW.format(id=1, name="void gemm<float, 128>(Params<float>)") + ',"8","1,204.5"',
        ROW.format(id=2, name="ucopy_f32") + ',"1,024","3.5"',
    ])
    assert per["ucopy_f32"] == [2, pytest.approx(6000.0)]  # nanoseconds
    assert per["void gemm"] == [1, pytest.approx(1_204_500.0)]


def test_details_page_keeps_only_the_time_metric(tmp_path):
    per = write(tmp_path, [
        HEAD + ',"Section Name","Metric Name","Metric Unit","Metric Value"',
        ROW.format(id=0, name="k") + ',"s","gpu__time_duration.sum","second","4.0e-05"',
        ROW.format(id=0, name="k") + ',"s","dram__bytes_read.sum","byte","53,261,312"',
        ROW.format(id=1, name="k") + ',"s","gpu__time_duration.sum","nsecond","500"',
    ])
    assert per == {"k": [2, pytest.approx(40_500.0)]}


def test_no_header_is_an_error(tmp_path):
    p = tmp_path / "ncu.csv"
    p.write_text("==ERROR== Failed to initialize the profiler\n")
    with pytest.raises(SystemExit):
        ncu_summary.read_rows(p)


def test_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        ncu_summary.read_rows(tmp_path / "absent.csv")
