#include "env_server/task_store.h"

#include <stdexcept>

namespace distil::env {

TaskStore TaskStore::from_files(const std::vector<std::string>& paths) {
  TaskStore store;
  for (const auto& path : paths) {
    auto loaded = tasks::load_jsonl(path);
    for (auto& task : loaded.tasks) {
      const std::string id = task.id;
      try {
        store.add(std::move(task));
      } catch (const std::runtime_error& e) {
        throw std::runtime_error(path + ": " + e.what());
      }
    }
  }
  return store;
}

void TaskStore::add(tasks::Task task) {
  if (by_id_.count(task.id)) throw std::runtime_error("task id '" + task.id + "' appears more than once");
  auto shared = std::make_shared<const tasks::Task>(std::move(task));
  by_id_.emplace(shared->id, shared);
  ordered_.push_back(std::move(shared));
}

std::shared_ptr<const tasks::Task> TaskStore::find(const std::string& id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

}  // namespace distil::env
