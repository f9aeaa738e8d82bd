import { lazy } from "react";
import { Route, Routes } from "react-router";
import { Layout } from "./components/Layout";
import { NotFound } from "./pages/NotFound";
import { Overview } from "./pages/Overview";

// The overview is in the entry chunk; pages with charts (recharts) or the graph (xyflow) load
// on first visit so the first screen stays small.
const ServicePage = lazy(() =>
  import("./pages/ServicePage").then((m) => ({ default: m.ServicePage })),
);
const ModelCardPage = lazy(() =>
  import("./pages/ModelCardPage").then((m) => ({ default: m.ModelCardPage })),
);
const LineagePage = lazy(() =>
  import("./pages/LineagePage").then((m) => ({ default: m.LineagePage })),
);
const JobsPage = lazy(() => import("./pages/JobsPage").then((m) => ({ default: m.JobsPage })));
const JobPage = lazy(() => import("./pages/JobPage").then((m) => ({ default: m.JobPage })));

/** Hash routes (HashRouter in main.tsx): the server needs no catch-all for them. */
export function AppRoutes() {
  return (
    <Routes>
      <Route element={<Layout />}>
        <Route index element={<Overview />} />
        <Route path="services/:name" element={<ServicePage />} />
        <Route path="services/:name/versions/:version" element={<ModelCardPage />} />
        <Route path="services/:name/lineage" element={<LineagePage />} />
        <Route path="jobs" element={<JobsPage />} />
        <Route path="jobs/:id" element={<JobPage />} />
        <Route path="*" element={<NotFound />} />
      </Route>
    </Routes>
  );
}
