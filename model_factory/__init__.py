"""Model templates, CL losses, rehearsal buffers, scenarios and the CL envelope (training job)."""
