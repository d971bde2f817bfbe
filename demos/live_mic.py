"""Teach the device a new sound through the microphone, then hear it recognised. Public API only.

    python demos/live_mic.py BUNDLE LABEL [--shots 3] [--device NAME|INDEX] [--seconds S]

Make the sound LABEL ``--shots`` times; it is learned on the spot (closed form) and every later occurrence
prints a detection. Ctrl-C (or --seconds) stops; the learned state is saved in the bundle.
"""

import argparse

from edge_pace.runtime.enrol import Listener
from edge_pace.runtime.learner import Learner
from edge_pace.runtime.microphone import Microphone

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("bundle")
parser.add_argument("label")
parser.add_argument("--shots", type=int, default=3)
parser.add_argument("--device", default=None, help="input device name or index (default: the system default)")
parser.add_argument("--seconds", type=float, default=None, help="stop after this much audio")
parser.add_argument("--buffer-seconds", type=float, default=10.0, help="most audio queued between device and loop")
args = parser.parse_args()

learner = Learner.load(args.bundle)
with Microphone(args.device, buffer_seconds=args.buffer_seconds) as mic:  # a name, or an index as digits
    listener = Listener(learner, mic.rate)
    listener.enrol(args.label, args.shots)
    print(f"listening on {mic.device.name} at {mic.rate} Hz: make the sound {args.label!r} {args.shots} times")
    try:
        for chunk in mic.chunks():
            for event in listener.feed(chunk):
                print(event, flush=True)
                if event["event"] == "learned":
                    learner.save()  # atomic: a crash never leaves a half-written state
            if args.seconds is not None and listener.time_s >= args.seconds:
                break
    except KeyboardInterrupt:
        pass
learner.save()
print(f"saved {learner.classes} to {learner.state_path}")
