-- Argo CD resource health of a VirtualCluster (virtualcluster.dev/v1alpha1).
-- Install it under resource.customizations.health.virtualcluster.dev_VirtualCluster in the
-- argocd-cm ConfigMap (see the README). It reads the conventions the operator keeps:
-- status.observedGeneration, and the conditions Ready, Reconciling and Stalled.
local hs = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function say(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the VirtualCluster"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = say(stalled, "The VirtualCluster cannot progress: " .. tostring(stalled.reason))
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = say(ready, "The virtual cluster is ready")
  return hs
end

if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = say(ready, "The VirtualCluster failed")
  return hs
end

hs.status = "Progressing"
hs.message = say(ready, say(condition(status, "Reconciling"), "Provisioning"))
return hs
