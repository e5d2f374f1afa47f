-- Argo CD health of a coreforge ImageRelease (coreforge.dev/ImageRelease), read from the
-- kstatus conditions the controller keeps (Ready, Reconciling, Stalled).
--
--   generation not observed yet            Progressing
--   Stalled=True                           Degraded     "<reason>: <message>"
--   Ready=True (target reached or passed)  Healthy      "<phase>: <message>"
--   waiting for a CoreBuild or blueprint   Suspended    "<phase>: <message>"
--   anything else                          Progressing  "<phase>: <message>"
--
-- Only Lua's base, table and package libraries are used (Argo CD opens no others for a
-- customization from argocd-cm), and every field may be missing.
local hs = {}

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

-- "a: b", or whichever of the two is not empty.
local function join(a, b)
  a, b = text(a), text(b)
  if a ~= "" and b ~= "" then
    return a .. ": " .. b
  end
  if a ~= "" then
    return a
  end
  return b
end

local status = obj.status
if type(status) ~= "table" then
  status = nil
end
local metadata = obj.metadata
if type(metadata) ~= "table" then
  metadata = {}
end

local function condition(kind)
  if status == nil or type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local generation = tonumber(metadata.generation)
local observed = status and tonumber(status.observedGeneration)
if observed == nil or (generation ~= nil and observed < generation) then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "Waiting for coreforge to observe generation " .. text(generation)
  else
    hs.message = "Waiting for coreforge to observe the release"
  end
  return hs
end

local phase = status.phase
local ready = condition("Ready")
local reconciling = condition("Reconciling")
local stalled = condition("Stalled")

if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = join(stalled.reason, stalled.message)
  return hs
end

if is_true(ready) then
  hs.status = "Healthy"
  hs.message = join(phase, ready.message)
  return hs
end

local message = ""
if reconciling ~= nil then
  message = text(reconciling.message)
end
if message == "" and ready ~= nil then
  message = text(ready.message)
end

-- Waiting for an object that does not exist yet: nothing happens until someone creates it.
if is_true(reconciling) and (reconciling.reason == "CoreBuildNotFound" or reconciling.reason == "BlueprintNotFound") then
  hs.status = "Suspended"
  hs.message = join(phase, message)
  return hs
end

hs.status = "Progressing"
hs.message = join(phase, message)
return hs
