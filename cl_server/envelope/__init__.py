"""The CL envelope: the update job that turns new labeled data into a validated, deployed version."""
