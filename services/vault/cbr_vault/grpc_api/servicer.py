"""VaultService over gRPC: convert, call the use case, convert back. Errors leave through cbr_common's table."""
from __future__ import annotations

from typing import Callable

from cbr.vault.v1 import vault_pb2, vault_pb2_grpc
from cbr_common.auth import current_principal
from cbr_vault.adapters.policies import PolicyDirectory
from cbr_vault.adapters.protectables import ProtectableDirectory
from cbr_vault.adapters.unit_of_work import VaultUnitOfWork
from cbr_vault.grpc_api import audit, convert
from cbr_vault.service import vaults


def _project() -> str:
    return current_principal().project_id


class VaultServicer(vault_pb2_grpc.VaultServiceServicer):
    def __init__(self, make_uow: Callable[[], VaultUnitOfWork], directory: ProtectableDirectory,
                 policies: PolicyDirectory | None = None):
        self._uow = make_uow
        self._directory = directory
        self._policies = policies

    async def CreateVault(self, request, context):
        vault = await vaults.create_vault(convert.create_vault_in(_project(), request), self._uow(), self._directory,
                                          self._policies)
        return vault_pb2.CreateVaultResponse(vault=convert.vault_out(vault))

    async def GetVault(self, request, context):
        vault = await vaults.get_vault(_project(), request.vault_id, self._uow())
        return vault_pb2.GetVaultResponse(vault=convert.vault_out(vault))

    async def ListVaults(self, request, context):
        found, count = await vaults.list_vaults(convert.list_vaults_in(_project(), request), self._uow())
        return vault_pb2.ListVaultsResponse(vaults=[convert.vault_out(v) for v in found], count=count)

    async def UpdateVault(self, request, context):
        vault = await vaults.update_vault(convert.update_vault_in(_project(), request), self._uow())
        return vault_pb2.UpdateVaultResponse(vault=convert.vault_out(vault))

    async def DeleteVault(self, request, context):
        task_id = await vaults.delete_vault(_project(), request.vault_id, self._uow())
        return vault_pb2.DeleteVaultResponse(task_id=task_id)

    async def AddResources(self, request, context):
        ids = await vaults.add_resources(_project(), request.vault_id, convert.resources_in(request.resources),
                                         self._uow(), self._directory)
        return vault_pb2.AddResourcesResponse(added_resource_ids=ids)

    async def RemoveResources(self, request, context):
        ids = await vaults.remove_resources(_project(), request.vault_id, list(request.resource_ids), self._uow())
        return vault_pb2.RemoveResourcesResponse(removed_resource_ids=ids)

    async def MigrateResources(self, request, context):
        ids = await vaults.migrate_resources(_project(), request.vault_id, request.destination_vault_id,
                                             list(request.resource_ids), self._uow())
        return vault_pb2.MigrateResourcesResponse(migrated_resource_ids=ids)

    async def AssociatePolicy(self, request, context):
        await vaults.associate_policy(_project(), request.vault_id, request.policy_id,
                                      request.destination_vault_id, self._uow(), self._policies)
        return vault_pb2.AssociatePolicyResponse(vault_id=request.vault_id, policy_id=request.policy_id)

    async def DissociatePolicy(self, request, context):
        await vaults.dissociate_policy(_project(), request.vault_id, request.policy_id, self._uow())
        return vault_pb2.DissociatePolicyResponse(vault_id=request.vault_id, policy_id=request.policy_id)

    async def SetBindRules(self, request, context):
        vault = await vaults.set_bind_rules(_project(), request.vault_id, request.auto_bind,
                                            convert.tags_in(request.bind_rules), self._uow())
        return vault_pb2.SetBindRulesResponse(vault=convert.vault_out(vault))

    async def ListVaultTags(self, request, context):
        vault = await vaults.get_vault(_project(), request.vault_id, self._uow())
        return vault_pb2.ListVaultTagsResponse(tags=convert.tags_out(vault.tags))

    async def ListProjectTags(self, request, context):
        tags = await vaults.list_project_tags(_project(), self._uow())
        return vault_pb2.ListProjectTagsResponse(
            tags=[vault_pb2.ProjectTag(key=k, values=v) for k, v in tags.items()])

    async def CreateVaultTags(self, request, context):
        tags = await vaults.create_vault_tags(_project(), request.vault_id, convert.tags_in(request.tags), self._uow())
        return vault_pb2.CreateVaultTagsResponse(tags=convert.tags_out(tags))

    async def DeleteVaultTags(self, request, context):
        tags = await vaults.delete_vault_tags(_project(), request.vault_id, list(request.keys), self._uow())
        return vault_pb2.DeleteVaultTagsResponse(tags=convert.tags_out(tags))

    async def ListAuditEvents(self, request, context):
        return await audit.list_audit_events(request, self._uow)
