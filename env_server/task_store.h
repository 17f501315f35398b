// The tasks a server can grade by id, loaded once at startup and read-only afterwards.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "tasks/task.h"

namespace distil::env {

class TaskStore {
 public:
  // Loads every file (JSONL); throws std::runtime_error naming the file and line for a bad
  // record or a task id that appears twice.
  static TaskStore from_files(const std::vector<std::string>& paths);

  void add(tasks::Task task);  // throws std::runtime_error on a duplicate id
  std::shared_ptr<const tasks::Task> find(const std::string& id) const;  // nullptr if unknown
  const std::vector<std::shared_ptr<const tasks::Task>>& all() const { return ordered_; }
  std::size_t size() const { return ordered_.size(); }

 private:
  std::unordered_map<std::string, std::shared_ptr<const tasks::Task>> by_id_;
  std::vector<std::shared_ptr<const tasks::Task>> ordered_;
};

}  // namespace distil::env
