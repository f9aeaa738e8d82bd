import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { HashRouter } from "react-router";
import { createQueryClient } from "./api/queryClient";
import { App } from "./App";
import "./styles.css";

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <HashRouter>
      <App client={createQueryClient()} />
    </HashRouter>
  </StrictMode>,
);
