"""The one Beam pipeline: the window transform, its sources and sinks, for stream and batch."""
