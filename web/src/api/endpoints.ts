import { request, withQuery } from "./client";
import type {
  AnnotationStatus,
  DataQueryCheck,
  Deployment,
  Job,
  JobFilter,
  JobLogLine,
  LineageNode,
  ModelCard,
  ModelVersion,
  Service,
  ServiceOverview,
  ServiceStatus,
  Timeline,
  Traffic,
  UpdateEntry,
  UpdateRequested,
  Whoami,
} from "./types";

const service = (name: string) => `/api/services/${encodeURIComponent(name)}`;
const version = (name: string, v: number) => `${service(name)}/versions/${v}`;
const job = (id: string) => `/api/jobs/${encodeURIComponent(id)}`;
// A blank reason is left out so the server records its own default.
const reasonBody = (reason: string) => (reason.trim() ? { reason: reason.trim() } : {});

export const api = {
  whoami: (token?: string) => request<Whoami>("/api/whoami", { token }),

  overview: () => request<ServiceOverview[]>("/api/overview"),
  services: () => request<Service[]>("/api/services"),
  setServiceStatus: (name: string, status: ServiceStatus) =>
    request<Service>(service(name), { method: "PATCH", body: { status } }),

  timeline: (name: string, minutes: number) =>
    request<Timeline>(withQuery(`${service(name)}/timeline`, { minutes })),
  updates: (name: string, limit = 100) =>
    request<UpdateEntry[]>(withQuery(`${service(name)}/updates`, { limit })),
  traffic: (name: string) => request<Traffic>(`${service(name)}/traffic`),
  versions: (name: string) => request<ModelVersion[]>(`${service(name)}/versions`),
  lineage: (name: string) => request<LineageNode[]>(`${service(name)}/lineage`),
  card: (name: string, v: number) => request<ModelCard>(`${version(name, v)}/card`),
  annotations: (name: string) => request<AnnotationStatus>(`${service(name)}/annotations`),

  requestUpdate: (name: string, reason: string) =>
    request<UpdateRequested>(`${service(name)}/update`, {
      method: "POST",
      body: reasonBody(reason),
    }),
  rollback: (name: string, v: number) =>
    request<Deployment>(`${service(name)}/rollback`, { method: "POST", body: { version: v } }),
  approve: (name: string, v: number, reason: string) =>
    request<Job>(`${version(name, v)}/approve`, { method: "POST", body: reasonBody(reason) }),
  reject: (name: string, v: number, reason: string) =>
    request<ModelVersion>(`${version(name, v)}/reject`, {
      method: "POST",
      body: reasonBody(reason),
    }),
  verifyDataQuery: (name: string, v: number) =>
    request<DataQueryCheck>(`${version(name, v)}/data-query/verify`, { method: "POST" }),

  jobs: (filter: JobFilter = {}) => request<Job[]>(withQuery("/api/jobs", { ...filter })),
  job: (id: string) => request<Job>(job(id)),
  jobLogs: (id: string, after: number, limit: number) =>
    request<JobLogLine[]>(withQuery(`${job(id)}/logs`, { after, limit })),
  cancelJob: (id: string) => request<Job>(`${job(id)}/cancel`, { method: "POST" }),
};
