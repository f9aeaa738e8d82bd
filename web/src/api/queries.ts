import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { isFinished } from "../lib/jobs";
import { ApiError } from "./client";
import { api } from "./endpoints";
import type { JobFilter } from "./types";

// Live pages poll; detail pages refresh when an action invalidates them.
const OVERVIEW_POLL_MS = 5000;
const SERVICE_POLL_MS = 5000;
const JOBS_POLL_MS = 3000;
const JOB_POLL_MS = 2000;

export const useOverview = () =>
  useQuery({
    queryKey: ["overview"],
    queryFn: () => api.overview(),
    refetchInterval: OVERVIEW_POLL_MS,
  });

export const useServices = () =>
  useQuery({ queryKey: ["services"], queryFn: () => api.services() });

export const useTimeline = (name: string, minutes: number) =>
  useQuery({
    queryKey: ["service", name, "timeline", minutes],
    queryFn: () => api.timeline(name, minutes),
    refetchInterval: SERVICE_POLL_MS,
    // Keep the old chart on screen while a new range loads.
    placeholderData: (previous) => previous,
  });

export const useUpdates = (name: string) =>
  useQuery({
    queryKey: ["service", name, "updates"],
    queryFn: () => api.updates(name),
    refetchInterval: SERVICE_POLL_MS,
  });

export const useTraffic = (name: string) =>
  useQuery({
    queryKey: ["service", name, "traffic"],
    queryFn: () => api.traffic(name),
    refetchInterval: SERVICE_POLL_MS,
  });

export const useVersions = (name: string) =>
  useQuery({
    queryKey: ["service", name, "versions"],
    queryFn: () => api.versions(name),
    refetchInterval: SERVICE_POLL_MS,
  });

export const useAnnotations = (name: string) =>
  useQuery({
    queryKey: ["service", name, "annotations"],
    queryFn: () => api.annotations(name),
    // 409: the service has no annotator; asking again will not give it one.
    refetchInterval: (query) =>
      query.state.error instanceof ApiError && query.state.error.status === 409
        ? false
        : SERVICE_POLL_MS,
  });

export const useLineage = (name: string) =>
  useQuery({ queryKey: ["service", name, "lineage"], queryFn: () => api.lineage(name) });

export const useCard = (name: string, version: number) =>
  useQuery({
    queryKey: ["service", name, "card", version],
    queryFn: () => api.card(name, version),
  });

export const useJobs = (filter: JobFilter) =>
  useQuery({
    queryKey: ["jobs", filter],
    queryFn: () => api.jobs(filter),
    refetchInterval: JOBS_POLL_MS,
    // Keep the old rows on screen while a changed filter loads.
    placeholderData: (previous) => previous,
  });

export const useJob = (id: string) =>
  useQuery({
    queryKey: ["job", id],
    queryFn: () => api.job(id),
    refetchInterval: (query) =>
      query.state.data && isFinished(query.state.data.status) ? false : JOB_POLL_MS,
  });

/** A mutation after which every cached query is stale, so each page shows the new state. */
export function useAction<TVars, TResult>(fn: (vars: TVars) => Promise<TResult>) {
  const client = useQueryClient();
  return useMutation({ mutationFn: fn, onSettled: () => client.invalidateQueries() });
}
