-- Argo CD health check for invite.operators.dev resources (UserInvitation,
-- InvitationEndpoint, ClusterInvitationEndpoint). It reads the conditions the
-- operator writes (kstatus): Ready, Reconciling and Stalled.
--   Healthy      Ready=True for the current generation
--   Degraded     Stalled=True for the current generation: a person must act
--   Suspended    Ready=False with reason Paused (the paused annotation)
--   Progressing  anything else, also a status of an older generation
local hs = {}

local function condition(conditions, type)
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local conditions = obj.status.conditions
local ready = condition(conditions, "Ready")
local stalled = condition(conditions, "Stalled")
local current = function(c)
  return generation == nil or c.observedGeneration == nil or c.observedGeneration >= generation
end

if ready == nil or not current(ready) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report Ready for generation " .. tostring(generation)
  return hs
end
if stalled ~= nil and stalled.status == "True" and current(stalled) then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end
if ready.reason == "Paused" then
  hs.status = "Suspended"
  hs.message = describe(ready)
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready)
return hs
