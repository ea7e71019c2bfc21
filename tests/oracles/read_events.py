"""Read a run's TensorBoard event files with TensorBoard's own reader and print a JSON summary:
scalar tags with their (step, value) lists, histogram tags, text tags, and the HPARAMS session.
usage: read_events.py RUN_DIR            (that summary)
       read_events.py RUN_DIR RUN_DIR... ({run_dir: summary}, one TensorBoard import for all)
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

def read(run_dir):
    ea = EventAccumulator(run_dir, size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()
    out = {
        "scalars": {t: [[e.step, e.value] for e in ea.Scalars(t)] for t in tags["scalars"]},
        "histograms": {t: len(ea.Histograms(t)) for t in tags["histograms"]},
        "tensors": sorted(tags["tensors"]),
        "hparams": None,
        "text": {},
    }
    for t in tags["tensors"]:
        md = ea.SummaryMetadata(t)
        if md.plugin_data.plugin_name == "text":
            out["text"][t] = ea.Tensors(t)[0].tensor_proto.string_val[0].decode()
    for tag, raw in (ea.PluginTagToContent("hparams") or {}).items():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            hp = {k: (v.string_value or v.number_value if v.WhichOneof("kind") != "bool_value" else v.bool_value)
                  for k, v in data.session_start_info.hparams.items()}
            out["hparams"] = {"group": data.session_start_info.group_name, "hparams": hp}
    return out


if len(sys.argv) == 2:
    print(json.dumps(read(sys.argv[1])))
else:
    print(json.dumps({d: read(d) for d in sys.argv[1:]}))
